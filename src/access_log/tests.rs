//! The writer against real files: lines arrive whole and in order, a
//! writer that cannot write drops and counts instead of blocking, a
//! reopen follows a rotated file, and failed writes are counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;

use super::writer::Writer;
use super::*;
use crate::config::AccessTarget;

/// Far longer than any write takes; only a failure waits this long.
const WAIT: Duration = Duration::from_secs(10);

fn dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-access-log-{what}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn counter() -> IntCounter {
    IntCounter::new("dropped", "test").unwrap()
}

fn record(id: usize) -> Record {
    Record {
        time: SystemTime::UNIX_EPOCH,
        request_id: format!("r{id}"),
        client: None,
        method: http::Method::GET,
        host: "h".into(),
        path: "/".into(),
        version: http::Version::HTTP_11,
        status: 200,
        bytes_in: 0,
        bytes_out: 0,
        duration: Duration::ZERO,
        upstream_time: None,
        route: None,
        upstream: None,
        backend: None,
        attempts: 0,
        local_reason: None,
        referer: None,
        user_agent: None,
    }
}

/// The request ids of the lines in `path`, each line checked to be JSON.
fn ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["request_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn file(path: &Path) -> AccessTarget {
    AccessTarget::File(path.to_path_buf())
}

#[test]
fn lines_arrive_whole_and_in_order() {
    let dir = dir("order");
    let path = dir.join("access.log");
    let dropped = counter();
    let writer = Writer::start(&file(&path), Format::Json, 4096, dropped.clone()).unwrap();
    for i in 0..1000 {
        writer.send(record(i));
    }
    assert!(writer.flush(WAIT));
    let want: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    assert_eq!(ids(&path), want);
    assert_eq!(dropped.get(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_that_cannot_write_drops_and_counts_without_blocking() {
    let dir = dir("fifo");
    let path = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let dropped = counter();
    // Nobody reads the FIFO: the writer's thread waits in its open.
    let writer = Writer::start(&file(&path), Format::Json, 4, dropped.clone()).unwrap();
    for i in 0..100 {
        writer.send(record(i));
    }
    // The thread takes at most one record and one pass (4) before it
    // waits for a reader, and the queue holds 4 more.
    assert!(dropped.get() >= 100 - 9, "dropped {}", dropped.get());
    assert!(!writer.flush(Duration::from_millis(50)));
    // A reader lets the thread go on with what it kept.
    let reader = std::thread::spawn({
        let path = path.clone();
        move || std::fs::read_to_string(path).unwrap()
    });
    drop(writer);
    let text = reader.join().unwrap();
    let kept = text.lines().count() as u64;
    assert!(kept >= 1, "{text}");
    assert_eq!(kept + dropped.get(), 100);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reopen_follows_a_rotated_file() {
    let dir = dir("reopen");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let writer = Writer::start(&file(&path), Format::Json, 16, counter()).unwrap();
    writer.send(record(1));
    assert!(writer.flush(WAIT));
    std::fs::rename(&path, &rotated).unwrap();
    writer.send(record(2));
    assert!(writer.flush(WAIT));
    writer.reopen();
    writer.send(record(3));
    assert!(writer.flush(WAIT));
    // Until the reopen, lines follow the file where it moved.
    assert_eq!(ids(&rotated), ["r1", "r2"]);
    assert_eq!(ids(&path), ["r3"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_writes_are_counted_as_dropped() {
    let dropped = counter();
    // Every write to /dev/full fails with ENOSPC.
    let full = AccessTarget::File(PathBuf::from("/dev/full"));
    let writer = Writer::start(&full, Format::Combined, 16, dropped.clone()).unwrap();
    for i in 0..5 {
        writer.send(record(i));
        assert!(writer.flush(WAIT));
    }
    assert_eq!(dropped.get(), 5);
}

#[test]
fn a_reload_with_other_settings_starts_a_new_sink_and_the_same_keeps_it() {
    let dir = dir("prepare");
    let settings = |name: &str| LogConfig {
        access: Some(file(&dir.join(name))),
        ..LogConfig::default()
    };
    let log = AccessLog::start(&LogConfig::default(), counter()).unwrap();
    assert!(log.sink().is_none());
    assert!(log.prepare(&LogConfig::default()).unwrap().is_none());
    let prepared = log.prepare(&settings("a.log")).unwrap().expect("changed");
    log.commit(prepared);
    log.sink().expect("on").send(record(1));
    assert!(log.flush(WAIT));
    assert_eq!(ids(&dir.join("a.log")), ["r1"]);
    assert!(log.prepare(&settings("a.log")).unwrap().is_none());
    let missing = LogConfig {
        access: Some(file(&dir.join("no/such/dir/a.log"))),
        ..LogConfig::default()
    };
    assert!(log.prepare(&missing).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
