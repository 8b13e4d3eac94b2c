//! Hot reload: read, parse, validate, diff, swap, in that order. A file
//! that fails any step changes nothing; the previous config keeps serving
//! and the failure is logged, counted and shown in `/status`.
//!
//! Triggers: a watcher on the config file's directory, SIGHUP, and
//! `POST /reload` on the admin port. All go through [`Reloader::reload`],
//! one at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::pool::Pool;

/// How long the directory must be quiet after the last event before the
/// file is read: editors and config tools write in several steps.
pub const QUIET_PERIOD: Duration = Duration::from_millis(150);

/// The longest a stream of events can hold a reload off.
pub const MAX_QUIET_WAIT: Duration = Duration::from_secs(2);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw the file change.
    File,
    Sighup,
    /// `POST /reload`.
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file change",
            Trigger::Sighup => "SIGHUP",
            Trigger::Admin => "POST /reload",
        }
    }
}

/// One reload attempt and how it ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: SystemTime,
    pub trigger: Trigger,
    pub result: AttemptResult,
}

#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The new config is serving.
    Applied { version: u64, diff: Diff },
    /// The file is the one already loaded.
    Unchanged,
    /// Nothing changed; the previous config keeps serving.
    Failed { error: String },
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        !matches!(self.result, AttemptResult::Failed { .. })
    }

    /// The JSON `/status` and `POST /reload` show.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "trigger": self.trigger.as_str(),
        });
        match &self.result {
            AttemptResult::Applied { version, diff } => {
                v["result"] = "success".into();
                v["snapshot_version"] = (*version).into();
                v["changes"] = diff.to_json();
            }
            AttemptResult::Unchanged => {
                v["result"] = "success".into();
                v["changes"] = "none: the file is the one already loaded".into();
            }
            AttemptResult::Failed { error } => {
                v["result"] = "failure".into();
                v["error"] = error.as_str().into();
                v["kept"] = "the previous config keeps serving".into();
            }
        }
        v
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub upstreams_added: Vec<String>,
    pub upstreams_removed: Vec<String>,
    /// `upstream/address`.
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    /// `upstream/address: old -> new`.
    pub reweighted: Vec<String>,
    /// `upstream: key, key` or `default_upstream`.
    pub settings: Vec<String>,
    /// Route names.
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// `name: what`, for a route of the same name whose conditions,
    /// upstream or rewriting changed (file position alone does not count).
    pub routes_changed: Vec<String>,
}

impl Diff {
    /// Compares two valid configs. Settings that cannot change without a
    /// restart are checked by [`restart_needed`], not here.
    pub fn between(old: &Config, new: &Config) -> Diff {
        let mut d = Diff::default();
        for u in &new.upstreams {
            let Some(o) = old.upstreams.iter().find(|o| o.name == u.name) else {
                d.upstreams_added.push(u.name.clone());
                d.backends_added.extend(
                    u.backends
                        .iter()
                        .map(|b| format!("{}/{}", u.name, b.address)),
                );
                continue;
            };
            for b in &u.backends {
                match o.backends.iter().find(|ob| ob.address == b.address) {
                    None => d.backends_added.push(format!("{}/{}", u.name, b.address)),
                    Some(ob) if ob.weight != b.weight => d.reweighted.push(format!(
                        "{}/{}: {} -> {}",
                        u.name, b.address, ob.weight, b.weight
                    )),
                    Some(_) => {}
                }
            }
            for ob in &o.backends {
                if !u.backends.iter().any(|b| b.address == ob.address) {
                    d.backends_removed
                        .push(format!("{}/{}", u.name, ob.address));
                }
            }
            let changed: Vec<&str> = [
                ("balance", o.balance != u.balance),
                ("timeouts", o.timeouts != u.timeouts),
                ("retries", o.retries != u.retries),
                ("health_check", o.health_check != u.health_check),
                ("passive_health_check", o.passive != u.passive),
                ("slow_start", o.slow_start != u.slow_start),
                ("retry_budget", o.retry_budget != u.retry_budget),
            ]
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
            if !changed.is_empty() {
                d.settings
                    .push(format!("{}: {}", u.name, changed.join(", ")));
            }
        }
        for o in &old.upstreams {
            if !new.upstreams.iter().any(|u| u.name == o.name) {
                d.upstreams_removed.push(o.name.clone());
                d.backends_removed.extend(
                    o.backends
                        .iter()
                        .map(|b| format!("{}/{}", o.name, b.address)),
                );
            }
        }
        let default_name = |c: &Config| c.default_upstream().map(|u| u.name.clone());
        if default_name(old) != default_name(new) {
            d.settings.push("default_upstream".to_string());
        }
        d.diff_routes(old, new);
        if old.server.limits != new.server.limits {
            d.settings.push("[server] request limits".to_string());
        }
        d
    }

    /// Routes are matched by name (an unnamed route's name is its position
    /// and upstream, so moving it reads as a removal and an addition).
    fn diff_routes(&mut self, old: &Config, new: &Config) {
        for r in &new.routes {
            let Some(o) = old.routes.iter().find(|o| o.name == r.name) else {
                self.routes_added.push(r.name.clone());
                continue;
            };
            let upstream = |c: &Config, i: usize| c.upstreams[i].name.clone();
            let changed: Vec<&str> = [
                ("hosts", o.hosts != r.hosts),
                ("path_prefix", o.path_prefix != r.path_prefix),
                ("strip_prefix", o.strip_prefix != r.strip_prefix),
                ("headers", o.headers != r.headers),
                (
                    "upstream",
                    upstream(old, o.upstream) != upstream(new, r.upstream),
                ),
            ]
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
            if !changed.is_empty() {
                self.routes_changed
                    .push(format!("{}: {}", r.name, changed.join(", ")));
            }
        }
        for o in &old.routes {
            if !new.routes.iter().any(|r| r.name == o.name) {
                self.routes_removed.push(o.name.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "upstreams_added": self.upstreams_added,
            "upstreams_removed": self.upstreams_removed,
            "backends_added": self.backends_added,
            "backends_removed": self.backends_removed,
            "reweighted": self.reweighted,
            "settings_changed": self.settings,
            "routes_added": self.routes_added,
            "routes_removed": self.routes_removed,
            "routes_changed": self.routes_changed,
        })
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_string();
        }
        let parts = [
            ("upstreams added", &self.upstreams_added),
            ("upstreams removed", &self.upstreams_removed),
            ("backends added", &self.backends_added),
            ("backends removed", &self.backends_removed),
            ("reweighted", &self.reweighted),
            ("settings changed", &self.settings),
            ("routes added", &self.routes_added),
            ("routes removed", &self.routes_removed),
            ("routes changed", &self.routes_changed),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(what, v)| format!("{what}: {}", v.join(", ")))
            .collect();
        shown.join("; ")
    }
}

/// The settings of `new` that differ from `old` and need a restart (or
/// `--upgrade`): the process and its listeners are built from them.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    [
        ("[server] listen", o.listen != n.listen),
        ("[server] threads", o.threads != n.threads),
        ("[server] grace_period", o.grace_period != n.grace_period),
        ("[server] watch_config", o.watch_config != n.watch_config),
        ("[admin] listen", old.admin.listen != new.admin.listen),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Applies the config file to the live pool on request.
pub struct Reloader {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    /// Held for a whole reload (on a blocking thread), so reloads happen
    /// one at a time.
    running: Mutex<()>,
    /// Held only briefly, so `/status` never waits for a reload.
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct State {
    loaded_at: SystemTime,
    last: Option<Attempt>,
}

impl Reloader {
    /// For the pool serving the config loaded from `path` just now.
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, path: PathBuf) -> Self {
        metrics.observe_config_loaded(SystemTime::now());
        Reloader {
            pool,
            metrics,
            path,
            running: Mutex::new(()),
            state: Mutex::new(State {
                loaded_at: SystemTime::now(),
                last: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file and, if it is valid and reloadable, swaps it in. A
    /// [`Trigger::File`] reload of an unchanged file does nothing and
    /// returns `None` (editors touch files they did not change), unless the
    /// last attempt failed: then the file is back to the serving config,
    /// and that is worth recording.
    pub fn reload(&self, trigger: Trigger) -> Option<Attempt> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.pool.snapshot();
        let result = match config::load(&self.path) {
            Err(e) => AttemptResult::Failed {
                error: e.to_string(),
            },
            Ok(new) if new.hash == current.config.hash => {
                let last_failed = self.state().last.as_ref().is_some_and(|a| !a.succeeded());
                if trigger == Trigger::File && !last_failed {
                    return None;
                }
                AttemptResult::Unchanged
            }
            Ok(new) => match restart_needed(&current.config, &new).as_slice() {
                [] => {
                    let diff = Diff::between(&current.config, &new);
                    for w in &new.warnings {
                        log::warn!("{w}");
                    }
                    let version = self.pool.install(new);
                    self.metrics.init_series(&self.pool.snapshot());
                    self.state().loaded_at = SystemTime::now();
                    self.metrics.observe_config_loaded(SystemTime::now());
                    AttemptResult::Applied { version, diff }
                }
                keys => AttemptResult::Failed {
                    error: format!(
                        "{}: {} changed, which needs a restart or `switchyard --upgrade`; \
                         nothing in the file was applied",
                        self.path.display(),
                        keys.join(", ")
                    ),
                },
            },
        };
        let attempt = Attempt {
            at: SystemTime::now(),
            trigger,
            result,
        };
        self.metrics.observe_reload(attempt.succeeded());
        let why = trigger.as_str();
        match &attempt.result {
            AttemptResult::Applied { version, diff } => {
                log::info!(
                    "config reloaded ({why}), snapshot {version}: {}",
                    diff.summary()
                )
            }
            AttemptResult::Unchanged => log::info!("config reload ({why}): file unchanged"),
            AttemptResult::Failed { error } => {
                log::error!("config reload ({why}) failed, previous config kept: {error}")
            }
        }
        self.state().last = Some(attempt.clone());
        Some(attempt)
    }

    /// When the serving config was loaded, and the last reload attempt.
    pub fn status(&self) -> (SystemTime, Option<Attempt>) {
        let state = self.state();
        (state.loaded_at, state.last.clone())
    }

    /// Runs [`reload`](Self::reload) off the async runtime: reading the file
    /// and resolving host names block.
    pub async fn reload_async(self: &Arc<Self>, trigger: Trigger) -> Option<Attempt> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.reload(trigger))
            .await
            .ok()
            .flatten()
    }
}

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
