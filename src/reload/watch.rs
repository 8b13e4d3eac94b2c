//! What triggers a reload besides `POST /reload`: the config file's
//! directory changing, and SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::{Reloader, Trigger, MAX_QUIET_WAIT, QUIET_PERIOD};

/// The background service behind the file watcher and SIGHUP.
pub struct Triggers {
    reloader: Arc<Reloader>,
    watch: bool,
}

impl Triggers {
    pub fn new(reloader: Arc<Reloader>, watch: bool) -> Self {
        Triggers { reloader, watch }
    }

    /// Watches the directory of the config file, not the file: editors and
    /// config tools replace the file (a new inode) and Kubernetes swaps a
    /// symlink in the directory. Only events about the file itself, or
    /// about a `..`-named entry (Kubernetes' `..data` and its versions),
    /// count; and of those only a written file being closed, a rename, a
    /// removal, or a new symlink, never a write in progress or a new empty
    /// file, so a file written in pieces is read once, complete.
    ///
    /// Each event sent says whether it was a removal only: a file removed
    /// may be in the middle of being written anew, see [`Triggers::start`].
    fn watch(&self, tx: mpsc::UnboundedSender<bool>) -> notify::Result<notify::RecommendedWatcher> {
        let path = &self.reloader.path;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_os_string());
        let ours = move |p: &Path| {
            p.file_name().is_some_and(|n| {
                Some(n) == name.as_deref() || n.as_encoded_bytes().starts_with(b"..")
            })
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let removal = matches!(&event, Ok(e) if matches!(e.kind, EventKind::Remove(_)));
                let relevant = match &event {
                    // Lost events (a queue overflow) or a watcher error: the
                    // file may have changed; the hash check sorts it out.
                    Err(_) => true,
                    Ok(e) if e.need_rescan() => true,
                    Ok(e) => {
                        let kind = match e.kind {
                            EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Remove(_)
                            | EventKind::Modify(ModifyKind::Name(_)) => true,
                            EventKind::Create(_) => e.paths.iter().any(|p| p.is_symlink()),
                            _ => false,
                        };
                        kind && e.paths.iter().any(|p| ours(p))
                    }
                };
                if relevant {
                    let _ = tx.send(removal);
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

#[async_trait]
impl BackgroundService for Triggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut events) = mpsc::unbounded_channel();
        let _watcher = if self.watch {
            match self.watch(tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    let path = self.reloader.path.display();
                    log::error!(
                        "cannot watch {path} for changes: {e}; reload with SIGHUP or POST /reload"
                    );
                    None
                }
            }
        } else {
            drop(tx);
            None
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let mut watching = self.watch;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = recv_signal(&mut hangup) => {
                    self.reloader.reload_async(Trigger::Sighup).await;
                }
                event = events.recv(), if watching => {
                    let Some(mut removals_only) = event else {
                        watching = false;
                        continue;
                    };
                    // Wait for the quiet period after the last event, but
                    // not forever in a busy directory.
                    let latest = tokio::time::Instant::now() + MAX_QUIET_WAIT;
                    loop {
                        let quiet = tokio::time::sleep(QUIET_PERIOD);
                        tokio::select! {
                            more = events.recv() => match more {
                                Some(removal) => removals_only &= removal,
                                None => break,
                            },
                            () = quiet => break,
                            () = tokio::time::sleep_until(latest) => break,
                        }
                    }
                    // Removed, and there again: it is being written anew,
                    // and closing it will say when it is whole.
                    if removals_only && self.reloader.path.exists() {
                        continue;
                    }
                    self.reloader.reload_async(Trigger::File).await;
                }
            }
        }
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
