//! Configs from a source other than the routes file — Ingress translations, from the cluster or
//! from manifests on disk — applied the way reloads are: the first one starts ferry, every later
//! one is applied with no unchanged listener touched and no connection dropped, and one that
//! cannot be used leaves the last good table serving (logged, counted in
//! `ferry_config_errors_total`, shown on /routes).
//!
//! Secret files are written before a translation is applied and the ones it no longer names are
//! removed only after it is live, so nothing in use disappears.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::{start_with, ApplyError, Options, Running};
use crate::config::Config;
use crate::sources::{self, Translation};

/// What turns a translation into a config.
#[derive(Debug, Clone)]
pub struct Feed {
    /// routes.yaml's config: its listeners and backends stay beside the translation's.
    pub base: Option<Config>,
    /// The admin listener when there is no base.
    pub admin: SocketAddr,
    /// Where Secret data is written (`Settings::secrets_dir` of the translation).
    pub secrets_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot write Secret files in {dir}: {source}")]
    Secrets { dir: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Translation(String),
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("the source stopped before its first translation")]
    Closed,
}

impl Feed {
    /// The config a translation stands for, its Secret files written.
    pub fn config<T: Translation>(&self, out: &T) -> Result<Config, FeedError> {
        sources::secrets::write(&self.secrets_dir, out.files())
            .map_err(|source| FeedError::Secrets { dir: self.secrets_dir.clone(), source })?;
        sources::config(out, self.base.as_ref(), self.admin).map_err(FeedError::Translation)
    }

    /// Starts ferry from the first translation on `rx`, then applies each later one until `rx`
    /// closes (the returned task ends then). A new base (routes.yaml changed) sent on `bases` is
    /// applied with the last translation; an error sent there (a routes file that does not parse)
    /// is counted and shown, and the running config stays.
    pub async fn start<T: Translation>(
        mut self,
        mut rx: mpsc::Receiver<T>,
        mut bases: Option<mpsc::Receiver<Result<Config, String>>>,
        opts: Options,
    ) -> Result<(Arc<Running>, JoinHandle<()>), FeedError> {
        let first = rx.recv().await.ok_or(FeedError::Closed)?;
        let running = Arc::new(start_with(self.config(&first)?, opts).await?);
        let _ = sources::secrets::sweep(&self.secrets_dir, first.files());
        let me = Arc::downgrade(&running);
        let task = tokio::spawn(async move {
            let mut last = first;
            loop {
                let base = async {
                    match bases.as_mut() {
                        Some(b) => b.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    out = rx.recv() => {
                        let Some(out) = out else { return };
                        last = out;
                    }
                    base = base => {
                        match base {
                            Some(Ok(b)) => self.base = Some(b),
                            Some(Err(e)) => {
                                // Logged where it was read; counted and shown on /routes here.
                                if let Some(running) = me.upgrade() {
                                    running.store.reject(&e);
                                }
                                continue;
                            }
                            None => { bases = None; continue; }
                        }
                    }
                }
                let Some(running) = me.upgrade() else { return };
                self.apply(&running, &last).await;
            }
        });
        Ok((running, task))
    }

    /// Applies one translation; on failure the last good table keeps serving.
    pub async fn apply<T: Translation>(&self, running: &Running, out: &T) -> bool {
        let result = match self.config(out) {
            Ok(cfg) => running.apply(cfg).await.map_err(FeedError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let _ = sources::secrets::sweep(&self.secrets_dir, out.files());
                let (objects, problems) = out.counts();
                info!(source = T::SOURCE, objects, problems, "translation applied");
                true
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    error!("{line}");
                }
                warn!(source = T::SOURCE, "translation rejected; keeping the last good one");
                running.store.reject(&e);
                false
            }
        }
    }
}
