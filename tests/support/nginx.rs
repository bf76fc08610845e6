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
