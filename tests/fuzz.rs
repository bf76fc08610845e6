//! Fuzzing ferry's own parsers and request-head path (targets in `ferry::fuzzing`, cargo-fuzz crate
//! in `tests/fuzz`).
//!
//! - Every `cargo test` replays the committed corpus (`tests/fuzz/corpus/TARGET/*`) through every
//!   target on stable.
//! - Where a nightly toolchain and cargo-fuzz are installed (`.ci/run` installs cargo-fuzz when
//!   nightly is there), each target also gets a bounded libFuzzer run: at most `FERRY_FUZZ_RUNS`
//!   executions (default 5,000,000) and `FERRY_FUZZ_SECONDS` seconds (default 60), starting from the
//!   committed corpus; new inputs go to a scratch directory, so the committed corpus stays small.
//!   A crash fails the test and names the input libFuzzer saved under `tests/fuzz/artifacts/`.
//!
//! Where cargo-fuzz cannot run, that test is reported as `ignored`, named
//! `libfuzzer_bounded_run_skipped_no_nightly_cargo_fuzz`, never as a pass. The fuzz build goes
//! to `fuzz/` inside the target directory the tests were built in (so `CARGO_TARGET_DIR` is
//! honoured), not into the source tree.
//!
//! Prints `fuzz executions / crashes` for the reliability report.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use libtest_mimic::{Arguments, Failed, Trial};

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 7] = [
    ("routes_yaml", ferry::fuzzing::routes_yaml),
    ("request_head", ferry::fuzzing::request_head),
    ("nginx_conf", ferry::fuzzing::nginx_conf),
    ("upstream_response", ferry::fuzzing::upstream_response),
    ("client_request", ferry::fuzzing::client_request),
    ("server_vs_hyper", ferry::fuzzing::server_vs_hyper),
    ("client_vs_hyper", ferry::fuzzing::client_vs_hyper),
];

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

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let fuzz = if cargo_fuzz().is_some() {
        Trial::test("libfuzzer_finds_no_crash_in_a_bounded_run", libfuzzer_finds_no_crash_in_a_bounded_run)
    } else {
        Trial::test("libfuzzer_bounded_run_skipped_no_nightly_cargo_fuzz", || Ok(())).with_ignored_flag(true)
    };
    let trials = vec![Trial::test("committed_corpus_replays_clean", committed_corpus_replays_clean), fuzz];
    libtest_mimic::run(&args, trials).exit_code()
}

fn committed_corpus_replays_clean() -> Result<(), Failed> {
    for (target, run) in TARGETS {
        let inputs = corpus(target);
        if inputs.len() < 5 {
            return Err(format!("{target}: the committed corpus has only {} inputs", inputs.len()).into());
        }
        for (path, data) in &inputs {
            if std::panic::catch_unwind(|| run(data)).is_err() {
                return Err(
                    format!("{target}: {} breaks a fuzz invariant (see the panic above)", path.display()).into()
                );
            }
        }
        println!("corpus replay {target}: {} inputs, 0 crashes", inputs.len());
    }
    Ok(())
}

/// The target directory this test binary was built into (`TARGET/debug/deps/fuzz-HASH`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| fuzz_dir().join("target"))
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

fn libfuzzer_finds_no_crash_in_a_bounded_run() -> Result<(), Failed> {
    let (runs, seconds) = (env_number("FERRY_FUZZ_RUNS", 5_000_000), env_number("FERRY_FUZZ_SECONDS", 60));
    let dir = fuzz_dir();
    // No ASan: ferry forbids unsafe code, so what the run looks for is panics, hangs and runaway
    // memory, which libFuzzer catches without it, and the build is far quicker.
    let target_dir = target_dir().join("fuzz");
    let build = cargo_fuzz()
        .expect("checked above")
        .args(["build", "--fuzz-dir"])
        .arg(&dir)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["-s", "none"])
        .output();
    match build {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            // Say why: a compile error and a full disk read very differently.
            let log = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            return Err(format!(
                "the fuzz targets do not build ({}); the end of cargo fuzz's output:\n{}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
            .into());
        }
        Err(e) => return Err(format!("cargo fuzz build did not start: {e}").into()),
    }

    let mut rows = Vec::new();
    for (target, _) in TARGETS {
        let scratch = tempfile::tempdir().expect("scratch corpus dir");
        let out = cargo_fuzz()
            .expect("checked above")
            .args(["run", "--fuzz-dir"])
            .arg(&dir)
            .arg("--target-dir")
            .arg(&target_dir)
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
            return Err(format!(
                "{target}: libFuzzer found a crash, input saved at {saved}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
            .into());
        }
        let n = executions(&log).ok_or_else(|| format!("{target}: no `Done N runs` line in:\n{log}"))?;
        if n == 0 {
            return Err(format!("{target}: libFuzzer ran nothing").into());
        }
        rows.push((target, n));
    }
    println!("{:<14} {:>12} {:>8}", "fuzz target", "executions", "crashes");
    for (target, n) in &rows {
        println!("{target:<14} {n:>12} {:>8}", 0);
    }
    println!("fuzz executions {} / crashes 0", rows.iter().map(|r| r.1).sum::<u64>());
    Ok(())
}
