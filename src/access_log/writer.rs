//! The writer: a bounded queue of records and one thread that formats
//! them and writes them out, so that no request ever waits on the disk.
//!
//! The request path only tries to queue its record; a full queue drops it
//! and counts the drop. The thread blocks while there is nothing to write;
//! once woken, it writes what is queued, then lets lines gather for
//! [`FLUSH_INTERVAL`] before the next write, so a busy proxy costs one
//! wake-up and one `write` per interval rather than per request. A write
//! that fails drops its lines (counted, logged once until writing works
//! again) and the file is opened anew before the next one.
//!
//! A file that is a FIFO is opened by the thread itself: opening one
//! waits for a reader, and that wait must not hold up the server (it fills
//! the queue instead, which is how the tests provoke a full queue).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntCounter;

use super::format::Format;
use super::record::Record;
use crate::config::AccessTarget;

/// How long lines gather between two writes while the proxy is busy: the
/// longest a line waits in the queue then.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// The formatted lines written at once, at most (a longer batch is
/// written in several).
const WRITE_BYTES: usize = 64 * 1024;

// Records go by value: the queue's slots are allocated once, and boxing
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Record),
    /// Look at the control state: a reopen or a flush was asked for.
    Wake,
}

/// What the rest of the server asks of the thread.
#[derive(Default)]
struct Control {
    reopen: bool,
    /// Flushes asked for, and the last one done.
    flush_asked: u64,
    flushed: u64,
}

struct Shared {
    control: Mutex<Control>,
    changed: Condvar,
    /// Lines lost: queue full, or their write failed.
    dropped: IntCounter,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One destination's queue and thread. Dropping the last handle lets the
/// thread write what is queued, close the file and end.
pub struct Writer {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    /// The thread's state until [`spawn`](Self::spawn) starts it.
    pending: Mutex<Option<Thread>>,
}

impl Writer {
    /// Opens `target` (a FIFO: in the thread) and starts its thread, with
    /// a queue of `queue_lines` records.
    #[cfg(test)]
    pub fn start(
        target: &AccessTarget,
        format: Format,
        queue_lines: usize,
        dropped: IntCounter,
    ) -> io::Result<Writer> {
        let writer = Self::open(target, format, queue_lines, dropped)?;
        writer.spawn()?;
        Ok(writer)
    }

    /// Like [`start`](Self::start), but the thread waits for
    /// [`spawn`](Self::spawn): a thread started before Pingora forks to run
    /// as a daemon would not be in the daemon. Lines sent meanwhile queue.
    pub fn open(
        target: &AccessTarget,
        format: Format,
        queue_lines: usize,
        dropped: IntCounter,
    ) -> io::Result<Writer> {
        let out = Output::open(target)?;
        let (tx, rx) = mpsc::sync_channel(queue_lines.max(1));
        let shared = Arc::new(Shared {
            control: Mutex::new(Control::default()),
            changed: Condvar::new(),
            dropped,
        });
        let thread = Thread {
            rx,
            shared: Arc::clone(&shared),
            out,
            format,
            buf: Vec::with_capacity(WRITE_BYTES),
            lines: 0,
            pass: queue_lines.max(1),
            failing: false,
        };
        Ok(Writer {
            tx,
            shared,
            pending: Mutex::new(Some(thread)),
        })
    }

    /// Starts the thread, unless it has started.
    pub fn spawn(&self) -> io::Result<()> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = pending {
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || thread.run())?;
        }
        Ok(())
    }

    /// Queues `record`, or counts it dropped if the queue is full. Never
    /// waits.
    pub fn send(&self, record: Record) {
        match self.tx.try_send(Msg::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.shared.dropped.inc(),
        }
    }

    /// Asks the thread to open the file again by its name (after
    /// logrotate moved it away); it does so before its next write.
    pub fn reopen(&self) {
        self.shared.control().reopen = true;
        self.wake();
    }

    /// Waits, at most `timeout`, until what was queued before this call
    /// is written; whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let mut control = self.shared.control();
        control.flush_asked += 1;
        let wanted = control.flush_asked;
        drop(control);
        self.wake();
        let control = self.shared.control();
        let (control, _) = self
            .shared
            .changed
            .wait_timeout_while(control, timeout, |c| c.flushed < wanted)
            .unwrap_or_else(|e| e.into_inner());
        control.flushed >= wanted
    }

    fn wake(&self) {
        self.shared.changed.notify_all();
        // A full queue means the thread is busy and sees the control soon.
        let _ = self.tx.try_send(Msg::Wake);
    }
}

/// Where the lines go.
enum Output {
    Stdout,
    File {
        path: PathBuf,
        /// `None` until opened (a FIFO), or after a failed write.
        file: Option<File>,
    },
}

impl Output {
    fn open(target: &AccessTarget) -> io::Result<Output> {
        match target {
            AccessTarget::Stdout => Ok(Output::Stdout),
            AccessTarget::File(path) => {
                let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
                let file = if fifo { None } else { Some(open(path)?) };
                Ok(Output::File {
                    path: path.clone(),
                    file,
                })
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Output::File { path, file } => {
                let f = match file {
                    Some(f) => f,
                    None => file.insert(open(path)?),
                };
                let written = f.write_all(bytes);
                if written.is_err() {
                    // Opened anew for the next write.
                    *file = None;
                }
                written
            }
        }
    }

    /// Opens the file again, at once, so that a rotated log's new file
    /// exists before the next line; a failure is left to the next write.
    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            *file = None;
            match open(path) {
                Ok(f) => {
                    *file = Some(f);
                    log::info!("access log: reopened {}", path.display());
                }
                Err(e) => log::error!("access log: cannot reopen {}: {e}", path.display()),
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Output::Stdout => "stdout".to_string(),
            Output::File { path, .. } => path.display().to_string(),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// The writer thread's state.
struct Thread {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    out: Output,
    format: Format,
    /// Formatted lines not yet written, and how many.
    buf: Vec<u8>,
    lines: u64,
    /// The most records one pass takes: the queue's capacity.
    pass: usize,
    /// The last write failed: said once, until one works.
    failing: bool,
}

impl Thread {
    fn run(mut self) {
        // Blocks while idle; ends once every handle is gone.
        while let Ok(first) = self.rx.recv() {
            self.take(first);
            // Each turn writes what came in during the last interval; a
            // turn with nothing new goes back to blocking.
            loop {
                let asked = self.apply_control();
                let (drained, gone) = self.drain();
                self.write_out();
                self.acknowledge(asked);
                if gone {
                    return;
                }
                if drained == 0 {
                    break;
                }
                self.pace();
            }
        }
    }

    fn take(&mut self, msg: Msg) {
        if let Msg::Line(record) = msg {
            self.format.write(&record, &mut self.buf);
            self.lines += 1;
            if self.buf.len() >= WRITE_BYTES {
                self.write_out();
            }
        }
    }

    /// Takes what is queued now (at most a queue's worth, so a steady
    /// stream cannot keep the thread from writing); how many, and whether
    /// every handle is gone.
    fn drain(&mut self) -> (usize, bool) {
        for n in 0..self.pass {
            match self.rx.try_recv() {
                Ok(msg) => self.take(msg),
                Err(TryRecvError::Empty) => return (n, false),
                Err(TryRecvError::Disconnected) => return (n, true),
            }
        }
        (self.pass, false)
    }

    /// Reopens if asked; returns the flushes asked for so far, which this
    /// turn's write covers.
    fn apply_control(&mut self) -> u64 {
        let mut control = self.shared.control();
        if std::mem::take(&mut control.reopen) {
            drop(control);
            self.out.reopen();
            control = self.shared.control();
        }
        control.flush_asked
    }

    fn acknowledge(&self, asked: u64) {
        let mut control = self.shared.control();
        if control.flushed < asked {
            control.flushed = asked;
            self.shared.changed.notify_all();
        }
    }

    /// Waits out the flush interval, unless a reopen or a flush is asked
    /// for meanwhile.
    fn pace(&self) {
        let control = self.shared.control();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(control, FLUSH_INTERVAL, |c| {
                !c.reopen && c.flushed >= c.flush_asked
            });
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.out.write_all(&self.buf) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("access log: writing to {} again", self.out.describe());
                }
            }
            Err(e) => {
                self.shared.dropped.inc_by(self.lines);
                if !std::mem::replace(&mut self.failing, true) {
                    log::error!(
                        "access log: cannot write to {}: {e}; lines are dropped and counted \
                         in switchyard_access_log_dropped_total until a write works again",
                        self.out.describe()
                    );
                }
            }
        }
        self.buf.clear();
        self.lines = 0;
    }
}
