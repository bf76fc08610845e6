//! Every routes.yaml example a user can copy must be valid: each YAML block in README.md that is a
//! ferry config (Kubernetes manifests there are skipped), the top-level routes.yaml and
//! deploy/routes.yaml. `ferry check` also reads certificate files; the README's certificate paths
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

#[test]
fn every_routes_yaml_example_in_the_readme_passes_check() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = 0;
    let mut bad = Vec::new();
    for (line, text) in yaml_blocks(&readme) {
        let manifest = text.lines().any(|l| l.starts_with("apiVersion:") || l.starts_with("kind:"));
        if manifest {
            continue;
        }
        checked += 1;
        if let Err(e) = Config::parse(&format!("README.md block at line {line}"), &text) {
            bad.push(format!("{e}\n---\n{text}"));
        }
    }
    assert!(checked >= 5, "only {checked} routes.yaml examples found in README.md");
    assert!(bad.is_empty(), "README examples that fail `ferry check`:\n{}", bad.join("\n\n"));
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
