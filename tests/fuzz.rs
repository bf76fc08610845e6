//! Fuzzing ferry's own parsers and request-head path (targets in `ferry::fuzzing`, cargo-fuzz crate
//! in `tests/fuzz`).
//!
//! - Every `cargo test` replays the committed corpus (`tests/fuzz/corpus/TARGET/*`) through both
//!   targets on stable.
//! - Where a nightly toolchain and cargo-fuzz are installed (`.ci/run` installs cargo-fuzz when
//!   nightly is there), each target also gets a bounded libFuzzer run: at most `FERRY_FUZZ_RUNS`
//!   executions (default 5,000,000) and `FERRY_FUZZ_SECONDS` seconds (default 60), starting from the
//!   committed corpus; new inputs go to a scratch directory, so the committed corpus stays small.
//!   A crash fails the test and names the input libFuzzer saved under `tests/fuzz/artifacts/`.
//!
//! Prints `fuzz executions / crashes` for the reliability report.

use std::path::{Path, PathBuf};
use std::process::Command;

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 2] =
    [("routes_yaml", ferry::fuzzing::routes_yaml), ("request_head", ferry::fuzzing::request_head)];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("readable corpus file"))).collect()
}

#[test]
fn committed_corpus_replays_clean() {
    for (target, run) in TARGETS {
        let inputs = corpus(target);
        assert!(inputs.len() >= 5, "{target}: the committed corpus has only {} inputs", inputs.len());
        for (path, data) in &inputs {
            if std::panic::catch_unwind(|| run(data)).is_err() {
                panic!("{target}: {} breaks a fuzz invariant (see the panic above)", path.display());
            }
        }
        println!("corpus replay {target}: {} inputs, 0 crashes", inputs.len());
    }
}

/// `cargo +nightly fuzz`, if this machine has both.
fn cargo_fuzz() -> Option<Command> {
    let nightly = Command::new("rustup").args(["run", "nightly", "rustc", "--version"]).output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let fuzz = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !fuzz.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let mut c = Command::new("cargo");
    // The outer `cargo test` exports its own toolchain and flags; the fuzz build picks its own.
    for v in ["RUSTUP_TOOLCHAIN", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
    {
        c.env_remove(v);
    }
    c.arg("+nightly").arg("fuzz");
    Some(c)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// "Done 123456 runs in 60 second(s)" → 123456.
fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| l.strip_prefix("Done ")?.split(' ').next()?.parse().ok())
}

#[test]
fn libfuzzer_finds_no_crash_in_a_bounded_run() {
    let Some(_) = cargo_fuzz() else {
        println!("fuzz: skipped, no nightly toolchain with cargo-fuzz here (the corpus replay still ran)");
        return;
    };
    let (runs, seconds) = (env_number("FERRY_FUZZ_RUNS", 5_000_000), env_number("FERRY_FUZZ_SECONDS", 60));
    let dir = fuzz_dir();
    // No ASan: ferry forbids unsafe code, so what the run looks for is panics, hangs and runaway
    // memory, which libFuzzer catches without it, and the build is far quicker.
    let build =
        cargo_fuzz().expect("checked above").args(["build", "--fuzz-dir"]).arg(&dir).args(["-s", "none"]).status();
    assert!(build.is_ok_and(|s| s.success()), "the fuzz targets do not build");

    let mut rows = Vec::new();
    for (target, _) in TARGETS {
        let scratch = tempfile::tempdir().expect("scratch corpus dir");
        let out = cargo_fuzz()
            .expect("checked above")
            .args(["run", "--fuzz-dir"])
            .arg(&dir)
            .args(["-s", "none", target])
            .arg(scratch.path())
            .arg(dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-runs={runs}"))
            .arg(format!("-max_total_time={seconds}"))
            .args(["-max_len=4096", "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .output()
            .expect("cargo fuzz runs");
        let log = String::from_utf8_lossy(&out.stderr);
        let crashed = !out.status.success();
        if crashed {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let saved = log.lines().find_map(|l| l.split("Test unit written to ").nth(1)).unwrap_or("(not saved)");
            panic!(
                "{target}: libFuzzer found a crash, input saved at {saved}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let n = executions(&log).unwrap_or_else(|| panic!("{target}: no `Done N runs` line in:\n{log}"));
        assert!(n > 0, "{target}: libFuzzer ran nothing");
        rows.push((target, n));
    }
    println!("{:<14} {:>12} {:>8}", "fuzz target", "executions", "crashes");
    for (target, n) in &rows {
        println!("{target:<14} {n:>12} {:>8}", 0);
    }
    println!("fuzz executions {} / crashes 0", rows.iter().map(|r| r.1).sum::<u64>());
}
