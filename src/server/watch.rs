//! One file watcher for everything ferry follows on disk: routes.yaml, certificate and key files
//! (and later htpasswd files). Directories are watched, not files, because Kubernetes updates a
//! mounted ConfigMap or Secret by swapping its `..data` symlink: the file's own inode never
//! changes. A burst of events (write, rename, symlink swap; both files of a pair) is settled into
//! one wake-up; the caller then compares contents to tell a real change from a touch.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;
use tracing::warn;

/// Watches a set of directories; [`Changes`] wakes when something in them changes.
pub struct Watch {
    watcher: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    what: &'static str,
}

/// The wake-ups of one [`Watch`].
pub struct Changes {
    rx: mpsc::Receiver<()>,
    settle: Duration,
}

/// The directory a file lives in, for watching (`.` for a bare file name).
pub fn dir_of(file: &Path) -> PathBuf {
    file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

impl Watch {
    /// A watcher with nothing watched yet. `what` names the files in logs. The first wake-up is
    /// already due, so a change made before the directories are watched is still seen once.
    pub fn new(what: &'static str, settle: Duration) -> notify::Result<(Watch, Changes)> {
        let (tx, rx) = mpsc::channel::<()>(1);
        let first = tx.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        })?;
        let _ = first.try_send(());
        Ok((Watch { watcher, dirs: HashSet::new(), what }, Changes { rx, settle }))
    }

    /// Watches exactly the directories of `files` (unwatching the ones no longer needed).
    pub fn follow<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) -> notify::Result<()> {
        let want: HashSet<PathBuf> = files.into_iter().map(dir_of).collect();
        for gone in self.dirs.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut result = Ok(());
        for dir in want.difference(&self.dirs) {
            if let Err(e) = self.watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch the directory of {}", self.what);
                result = Err(e);
            }
        }
        self.dirs = want;
        result
    }
}

impl Changes {
    /// Waits for the next change, lets the burst settle, and returns `false` once the watcher is gone.
    pub async fn next(&mut self) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        tokio::time::sleep(self.settle).await;
        while self.rx.try_recv().is_ok() {}
        true
    }
}
