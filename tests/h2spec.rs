//! h2spec, the community's HTTP/2 conformance tester, against ferry's two HTTP/2 ways in: h2c
//! with prior knowledge on a plain listener, and h2 chosen by ALPN on a TLS listener. Each runs
//! twice in a row; every test case must pass both times.
//!
//! h2spec is built from Go modules by `tests/tools/h2spec.sh` (`.ci/run` calls it); the test
//! looks for it at `$FERRY_H2SPEC`, then where that script puts it.

mod support;

use std::path::PathBuf;

use support::*;

fn h2spec() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_H2SPEC") {
        return PathBuf::from(p);
    }
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/h2spec.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs tests/tools/h2spec.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(text.lines().last().unwrap_or_default().trim());
    assert!(out.status.success() && path.is_file(), "h2spec is not built (tests/tools/h2spec.sh): {text}");
    path
}

/// Runs h2spec against `port`; (cases, passed, failed, the lines naming failures).
async fn run(bin: &PathBuf, port: u16, tls: bool) -> (u32, u32, u32, Vec<String>) {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--timeout", "2"]);
    if tls {
        cmd.args(["-t", "-k"]);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.kill_on_drop(true).output())
        .await
        .expect("h2spec finishes")
        .expect("h2spec runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let failures: Vec<String> = text.lines().filter(|l| l.contains('×')).map(|l| l.trim().to_string()).collect();
    // "145 tests, 145 passed, 0 skipped, 0 failed"
    let summary = text.lines().rev().find(|l| l.contains(" tests, ")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    let n = |word: &str| -> u32 {
        let words: Vec<&str> = summary.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word).unwrap_or_else(|| panic!("{word} in {summary}"));
        words[i - 1].parse().unwrap()
    };
    (n("tests"), n("passed"), n("failed"), failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_every_case_on_h2c_and_on_tls_twice() {
    let bin = h2spec();
    let app = upstream("app").await;
    let pki = support::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(&["localhost"]);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let d = dir.path().display();
    let f = ferry(&format!(
        "admin: 127.0.0.1:0
listeners:
  - {{ name: plain, bind: 127.0.0.1:0, routes: [ {{ backend: app }} ] }}
  - name: tls
    bind: 127.0.0.1:0
    tls: {{ certificates: [ {{ cert: {d}/tls.crt, key: {d}/tls.key }} ] }}
    routes: [ {{ backend: app }} ]
backends:
  app: {{ addresses: [{}] }}
",
        app.addr
    ))
    .await;
    let mut bad = Vec::new();
    for round in 1..=2 {
        for (name, tls) in [("plain", false), ("tls", true)] {
            let port = f.addr(name).unwrap().port();
            let (cases, passed, failed, failures) = run(&bin, port, tls).await;
            println!("h2spec round {round}, {name}: {cases} cases, {passed} passed, {failed} failed");
            for l in &failures {
                println!("  {l}");
            }
            if failed > 0 || passed != cases || cases < 145 {
                bad.push(format!("round {round}, {name}: {passed}/{cases}: {failures:?}"));
            }
        }
    }
    assert!(bad.is_empty(), "h2spec failures:\n{}", bad.join("\n"));
    f.shutdown(std::time::Duration::ZERO, PATIENCE).await;
}
