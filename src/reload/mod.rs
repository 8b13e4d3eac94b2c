//! Hot reload: read, parse, validate, diff, swap, in that order. A file
//! that fails any step changes nothing; the previous config keeps serving
//! and the failure is logged, counted and shown in `/status`.
//!
//! Triggers: a watcher on the config file's directory, SIGHUP, and
//! `POST /reload` on the admin port. All go through [`Reloader::reload`],
//! one at a time.

mod diff;
mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

pub use diff::{restart_needed, Diff};
pub use watch::Triggers;

use crate::access_log::AccessLog;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::pool::{Pool, Snapshot};
use crate::tls::Tls;

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
    Applied { version: u64, diff: Box<Diff> },
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

/// Applies the config file to the live pool on request.
pub struct Reloader {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// The certificates, reloaded with the config.
    tls: Option<Arc<Tls>>,
    /// Started anew when `[log]` changes.
    access_log: Arc<AccessLog>,
    path: PathBuf,
    /// Held for a whole reload (on a blocking thread), so reloads happen
    /// one at a time.
    running: Mutex<()>,
    /// Held only briefly, so `/status` never waits for a reload.
    state: Mutex<State>,
    /// Counts reload attempts, for whoever follows them.
    attempts: tokio::sync::watch::Sender<u64>,
    /// The certificate and key files of the last config read, applied or
    /// not: a reload that failed for want of one of them is tried again
    /// when it appears.
    wanted: Mutex<Vec<PathBuf>>,
    /// Those of them that did not exist when it was read.
    missing: Mutex<Vec<PathBuf>>,
}

#[derive(Debug, Clone)]
struct State {
    loaded_at: SystemTime,
    last: Option<Attempt>,
}

impl Reloader {
    /// For the pool serving the config loaded from `path` just now.
    pub fn new(
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
        access_log: Arc<AccessLog>,
        path: PathBuf,
    ) -> Self {
        metrics.observe_config_loaded(SystemTime::now());
        Reloader {
            pool,
            metrics,
            tls,
            access_log,
            path,
            running: Mutex::new(()),
            state: Mutex::new(State {
                loaded_at: SystemTime::now(),
                last: None,
            }),
            attempts: tokio::sync::watch::Sender::new(0),
            wanted: Mutex::new(Vec::new()),
            missing: Mutex::new(Vec::new()),
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
            Ok(new) => {
                self.want(&new);
                self.apply(&current, new, trigger)?
            }
        };
        let attempt = Attempt {
            at: SystemTime::now(),
            trigger,
            result,
        };
        self.metrics.observe_reload(attempt.succeeded());
        self.attempts.send_modify(|n| *n += 1);
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

    /// Swaps in `new`, a valid config, if it may be and any of it (or of
    /// its certificates) changed; `None` for a file change that changed
    /// nothing, see [`reload`](Self::reload).
    fn apply(&self, current: &Snapshot, new: Config, trigger: Trigger) -> Option<AttemptResult> {
        let keys = restart_needed(&current.config, &new);
        if !keys.is_empty() {
            return Some(AttemptResult::Failed {
                error: format!(
                    "{}: {} changed, which needs a restart or `switchyard --upgrade`; \
                     nothing in the file was applied",
                    self.path.display(),
                    keys.join(", ")
                ),
            });
        }
        // Opened before anything is swapped: a file that cannot be opened
        // fails the reload as a whole.
        let access_log = match self.access_log.prepare(&new.log) {
            Ok(prepared) => prepared,
            Err(e) => {
                let error = format!(
                    "{}: cannot open the access log {}: {e}; nothing in the file was applied",
                    self.path.display(),
                    new.log.describe()
                );
                return Some(AttemptResult::Failed { error });
            }
        };
        let certificates = match self.reload_certificates(&new) {
            Err(error) => return Some(AttemptResult::Failed { error }),
            Ok(certificates) => certificates,
        };
        // The same text can still read other files: an upstream's CA
        // bundle or client certificate, replaced in place.
        let unchanged =
            new.hash == current.config.hash && new.upstreams == current.config.upstreams;
        if unchanged && certificates.is_none() {
            let last_failed = self.state().last.as_ref().is_some_and(|a| !a.succeeded());
            if trigger == Trigger::File && !last_failed {
                return None;
            }
            return Some(AttemptResult::Unchanged);
        }
        let mut diff = Diff::between(&current.config, &new);
        diff.certificates = certificates.unwrap_or_default();
        let version = if unchanged {
            // Only certificates changed: the snapshot stays.
            current.version
        } else {
            for w in &new.warnings {
                log::warn!("{w}");
            }
            if let Some(prepared) = access_log {
                self.access_log.commit(prepared);
            }
            let version = self.pool.install(new);
            self.metrics.init_series(&self.pool.snapshot());
            version
        };
        self.state().loaded_at = SystemTime::now();
        self.metrics.observe_config_loaded(SystemTime::now());
        Some(AttemptResult::Applied {
            version,
            diff: Box::new(diff),
        })
    }

    /// Loads `new`'s certificates, if it has TLS, and installs them if any
    /// changed: what changed, or why none could be loaded (nothing of the
    /// config is applied then).
    fn reload_certificates(&self, new: &Config) -> Result<Option<Vec<String>>, String> {
        match (&self.tls, &new.server.tls) {
            (Some(tls), Some(config)) => tls.reload(config).map_err(|e| e.to_string()),
            // Adding or removing TLS needs a restart, refused before this.
            _ => Ok(None),
        }
    }

    /// Changes with every reload attempt.
    pub fn attempts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// Remembers the certificate files `new` names.
    fn want(&self, new: &Config) {
        let files = cert_files(new);
        let missing = files.iter().filter(|f| !f.exists()).cloned().collect();
        *self.missing.lock().unwrap_or_else(|e| e.into_inner()) = missing;
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = files;
    }

    /// Whether a file the last config read named, and that was not there
    /// then, is there now: a reload would read it.
    pub fn missing_file_appeared(&self) -> bool {
        let missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        missing.iter().any(|f| f.exists())
    }

    /// The files whose change calls for a reload: the config, and the
    /// certificates and keys of the serving config and of the last one
    /// read.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        files.extend(cert_files(&self.pool.snapshot().config));
        files.extend(
            self.wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        files.dedup();
        files
    }

    /// The TLS side, for `/status`.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_deref()
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

/// The certificate and key files `config` names.
fn cert_files(config: &Config) -> Vec<PathBuf> {
    let certs = config.server.tls.iter().flat_map(|t| &t.certificates);
    certs
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect()
}
