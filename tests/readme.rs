//! Every routes.yaml example a user can copy must be valid: each YAML block in README.md and in
//! docs/*.md that is a ferry config (Kubernetes manifests there are skipped), the top-level
//! routes.yaml and deploy/routes.yaml. And the README stays a front door: short, its links alive. `ferry check` also reads certificate files; the README's certificate paths
//! are a cluster's, so the blocks are validated as `check` validates the file itself.

use std::path::Path;

use ferry::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (first line number, text) of every ```yaml block, dedented by its fence's indentation.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match &mut open {
            None => {
                if line.trim() == "```yaml" {
                    let indent = line.len() - line.trim_start().len();
                    open = Some((i + 2, indent, String::new()));
                }
            }
            Some((start, indent, text)) => {
                if line.trim() == "```" {
                    blocks.push((*start, std::mem::take(text)));
                    open = None;
                } else {
                    text.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                    text.push('\n');
                }
            }
        }
    }
    blocks
}

/// README.md and every docs/*.md: (name, text).
fn documents() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), std::fs::read_to_string(root().join("README.md")).unwrap())];
    let mut docs: Vec<_> = std::fs::read_dir(root().join("docs")).unwrap().flatten().map(|e| e.path()).collect();
    docs.sort();
    for p in docs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
        out.push((name, std::fs::read_to_string(&p).unwrap()));
    }
    out
}

#[test]
fn every_routes_yaml_example_in_the_docs_passes_check() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for (name, doc) in documents() {
        for (line, text) in yaml_blocks(&doc) {
            let manifest = text.lines().any(|l| l.starts_with("apiVersion:") || l.starts_with("kind:"));
            if manifest {
                continue;
            }
            checked += 1;
            if let Err(e) = Config::parse(&format!("{name} block at line {line}"), &text) {
                bad.push(format!("{e}\n---\n{text}"));
            }
        }
    }
    assert!(checked >= 10, "only {checked} routes.yaml examples found in README.md and docs/");
    assert!(bad.is_empty(), "examples that fail `ferry check`:\n{}", bad.join("\n\n"));
}

#[test]
fn the_readme_is_a_front_door_and_its_links_lead_somewhere() {
    let (_, readme) = &documents()[0];
    let lines = readme.lines().count();
    assert!(lines <= 320, "README.md has {lines} lines; reference material goes to docs/");
    // The two commands a newcomer runs.
    assert!(readme.contains("\ncargo run --release -- demo\n"), "the demo command");
    assert!(readme.contains("\nbash tests/all.sh\n"), "the test command");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("exec bash tests/all.sh"), ".ci/run runs the README's test command");
    // Every relative link in the README and the docs names a file that exists.
    for (name, doc) in documents() {
        let base = if name.starts_with("docs/") { root().join("docs") } else { root().to_path_buf() };
        for (i, _) in doc.match_indices("](") {
            let target = doc[i + 2..].split(')').next().unwrap_or_default();
            if target.starts_with("http") || target.starts_with('#') || target.is_empty() {
                continue;
            }
            let path = base.join(target.split('#').next().unwrap_or_default());
            assert!(path.exists(), "{name}: link to `{target}` leads nowhere");
        }
    }
}

#[test]
fn the_shipped_routes_files_are_valid_and_the_top_level_one_needs_no_cluster() {
    let top = Config::load(&root().join("routes.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!top.uses_kubernetes(), "routes.yaml must run without a cluster (`ferry run -c routes.yaml`)");
    let deploy = Config::load(&root().join("deploy/routes.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(deploy.uses_kubernetes(), "deploy/routes.yaml is the in-cluster file");
}

#[test]
fn no_example_strips_the_eureka_prefix() {
    // A Eureka server serves /eureka/apps and /eureka/css itself; a stripped /eureka prefix breaks
    // every client call. Checked on the parsed files, not the text.
    for file in ["routes.yaml", "deploy/routes.yaml"] {
        let c = Config::load(&root().join(file)).unwrap_or_else(|e| panic!("{e}"));
        for r in c.listeners.iter().flat_map(|l| &l.routes) {
            let eureka = r.backend.as_deref().is_some_and(|b| b.starts_with("eureka"));
            let rewrites = r.strip_prefix || r.actions.rewrite.is_some();
            assert!(!(eureka && rewrites), "{file}: route `{}` rewrites the path in front of Eureka", r.name);
        }
    }
}

#[test]
fn every_ingress_example_in_the_docs_passes_check_k() {
    use ferry::sources::{ingress, manifests::Manifests, Severity};
    let mut checked = 0;
    for (name, doc) in documents() {
        for (line, text) in yaml_blocks(&doc) {
            if !text.lines().any(|l| l.trim() == "kind: Ingress") {
                continue;
            }
            checked += 1;
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("example.yaml");
            std::fs::write(&file, &text).unwrap();
            let m = Manifests::read(&[file]).unwrap_or_else(|e| panic!("{name} block at line {line}: {e:?}"));
            let any = "127.0.0.1:0".parse().unwrap();
            let out = ingress::translate(&m.objects, &ingress::Settings::new(any, any, dir.path().join("s")));
            assert!(!out.accepted.is_empty(), "{name} block at line {line}: no Ingress of class ferry");
            let errors: Vec<String> =
                out.problems.iter().filter(|p| p.severity == Severity::Error).map(|p| m.render(p)).collect();
            assert!(errors.is_empty(), "{name} block at line {line} fails `ferry check -k`:\n{}", errors.join("\n"));
        }
    }
    assert!(checked >= 1, "no Ingress example found in README.md and docs/");
}
