//! What triggers a reload besides `POST /reload`: a change to the config
//! file or to one of its certificate or key files, and SIGHUP.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

    fn files(&self) -> Vec<PathBuf> {
        self.reloader.watched_files()
    }

    /// The last reload failed, and a file it missed is there now.
    fn missed_a_file(&self) -> bool {
        let (_, last) = self.reloader.status();
        last.is_some_and(|a| !a.succeeded()) && self.reloader.missing_file_appeared()
    }
}

/// Watches the directories of the files a reload reads, not the files:
/// editors and config tools replace a file (a new inode), and Kubernetes
/// swaps a symlink in the directory. Only events about one of the files
/// (by name), or about a `..`-named entry (Kubernetes' `..data` and its
/// versions), count; and of those only a written file being closed, a
/// rename, a removal, or a new symlink, never a write in progress or a new
/// empty file, so a file written in pieces is read once, complete. A file
/// of the same name in another watched directory triggers a reload too,
/// which finds nothing changed.
///
/// Each event sent says whether it was a removal only: a file removed may
/// be in the middle of being written anew, see [`Triggers::start`].
struct Watch {
    watcher: notify::RecommendedWatcher,
    names: Arc<Mutex<HashSet<OsString>>>,
    dirs: HashSet<PathBuf>,
}

impl Watch {
    fn new(tx: mpsc::UnboundedSender<bool>) -> notify::Result<Watch> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let ours = {
            let names = Arc::clone(&names);
            move |p: &Path| {
                p.file_name().is_some_and(|n| {
                    n.as_encoded_bytes().starts_with(b"..")
                        || names.lock().unwrap_or_else(|e| e.into_inner()).contains(n)
                })
            }
        };
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let removal = matches!(&event, Ok(e) if matches!(e.kind, EventKind::Remove(_)));
            let relevant = match &event {
                // Lost events (a queue overflow) or a watcher error: a file
                // may have changed; the reload sorts it out.
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
        Ok(Watch {
            watcher,
            names,
            dirs: HashSet::new(),
        })
    }

    /// Watches the directories of `files`, and no others. Each is watched
    /// anew every time, so one replaced since (a new directory at the
    /// path) is watched again. The config's must be watched; a
    /// certificate directory that cannot be is logged.
    /// Whether it watches a directory it did not before.
    fn sync(&mut self, files: &[PathBuf]) -> notify::Result<bool> {
        let dirs: HashSet<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        let config_dir = dir_of(&files[0]);
        let mut watched = HashSet::new();
        for dir in dirs {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) if dir == config_dir => return Err(e),
                Err(e) => log::error!(
                    "cannot watch {} for certificate changes: {e}; reload with SIGHUP or POST /reload",
                    dir.display()
                ),
            }
        }
        let added = !watched.is_subset(&self.dirs);
        self.dirs = watched;
        let names = files.iter().filter_map(|f| f.file_name()).map(Into::into);
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = names.collect();
        Ok(added)
    }
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[async_trait]
impl BackgroundService for Triggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut watch = None;
        if self.watch {
            let started = Watch::new(tx).and_then(|mut w| w.sync(&self.files()).map(|_| w));
            match started {
                Ok(w) => watch = Some(w),
                Err(e) => {
                    let path = self.reloader.path.display();
                    log::error!(
                        "cannot watch {path} for changes: {e}; reload with SIGHUP or POST /reload"
                    );
                }
            }
        } else {
            drop(tx);
        }
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let mut attempts = self.reloader.attempts();
        let mut watching = watch.is_some();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = recv_signal(&mut hangup) => {
                    self.reloader.reload_async(Trigger::Sighup).await;
                }
                // A reload from any trigger may have named other files.
                Ok(()) = attempts.changed() => {
                    let Some(w) = watch.as_mut() else { continue };
                    match w.sync(&self.files()) {
                        // A file the failed attempt missed may have been
                        // written before its directory was watched: then
                        // no event will come for it, so look now.
                        Ok(true) if self.missed_a_file() => {
                            self.reloader.reload_async(Trigger::File).await;
                        }
                        Ok(_) => {}
                        Err(e) => log::error!("cannot watch the config's directory any more: {e}"),
                    }
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
                    if removals_only && self.files().iter().all(|f| f.exists()) {
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
