//! Real nginx beside ferry: its binary, how to run it from a scratch prefix, and waiting for it.

use std::path::{Path, PathBuf};

/// The nginx binary (`.ci/run` installs nginx-light).
pub fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .expect("nginx is installed (.ci/run installs nginx-light)")
}

/// Arguments that run `conf` in the foreground with everything (pid, error log) under `dir`.
pub fn args(dir: &Path, conf: &Path) -> Vec<String> {
    let pid = dir.join("nginx.pid");
    vec![
        "-p".into(),
        dir.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-g".into(),
        format!("daemon off; master_process off; pid {};", pid.display()),
    ]
}

/// Waits (bounded) until something accepts connections on 127.0.0.1:`port`.
pub async fn wait_listening(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {port}");
}

/// Starts nginx on `conf` (see [`args`]) and waits (bounded) until it holds its listening sockets:
/// nginx writes its pid file only after binding them all. A port another process took between
/// choosing it and nginx binding it makes nginx exit first: then `Err` with its error log, and the
/// caller picks new ports.
pub async fn start(dir: &Path, conf: &Path) -> Result<tokio::process::Child, String> {
    let pid = dir.join("nginx.pid");
    let _ = std::fs::remove_file(&pid);
    let mut child = tokio::process::Command::new(binary())
        .args(args(dir, conf))
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx does not run: {e}"))?;
    // nginx retries a busy address for 2.5 s before it gives up.
    for _ in 0..800 {
        if std::fs::read_to_string(&pid).is_ok_and(|p| p.trim() == child.id().unwrap_or_default().to_string()) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited ({status}) before listening: {}", log.trim()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err("nginx neither listens nor exits".into())
}

/// The error [`start`] gives when a port was taken before nginx could bind it.
pub fn port_taken(err: &str) -> bool {
    err.contains("Address already in use")
}
