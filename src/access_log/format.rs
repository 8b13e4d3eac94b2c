//! The two line formats: JSON (one object a line, the fields documented in
//! the README) and the Apache/nginx "combined" line. Both append one whole
//! line, newline included, to a buffer, and run in the writer thread.

use std::io::Write;
use std::time::{Duration, SystemTime};

use super::record::{protocol, Record};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    #[default]
    Json,
    /// `client - - [time] "METHOD path PROTO" status bytes "referer" "user-agent"`.
    Combined,
}

impl Format {
    pub const NAMES: [&'static str; 2] = ["json", "combined"];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Combined => "combined",
        }
    }

    /// Appends `record` as one line to `out`.
    pub fn write(self, record: &Record, out: &mut Vec<u8>) {
        match self {
            Format::Json => json(record, out),
            Format::Combined => combined(record, out),
        }
    }
}

/// One JSON object and a newline. Writes to a `Vec` cannot fail.
pub fn json(r: &Record, out: &mut Vec<u8>) {
    let time = humantime::format_rfc3339_millis(r.time);
    let _ = write!(out, "{{\"time\":\"{time}\",\"request_id\":");
    string(out, &r.request_id);
    out.extend_from_slice(b",\"client\":");
    match r.client {
        Some(ip) => {
            let _ = write!(out, "\"{ip}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    string(out, r.method.as_str());
    out.extend_from_slice(b",\"host\":");
    string(out, &r.host);
    out.extend_from_slice(b",\"path\":");
    string(out, &r.path);
    let _ = write!(
        out,
        ",\"protocol\":\"{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration\":{}",
        protocol(r.version),
        r.status,
        r.bytes_in,
        r.bytes_out,
        Seconds(r.duration),
    );
    out.extend_from_slice(b",\"upstream_time\":");
    match r.upstream_time {
        Some(d) => {
            let _ = write!(out, "{}", Seconds(d));
        }
        None => out.extend_from_slice(b"null"),
    }
    for (key, value) in [
        ("route", &r.route),
        ("upstream", &r.upstream),
        ("backend", &r.backend),
    ] {
        let _ = write!(out, ",\"{key}\":");
        optional(out, value.as_deref());
    }
    let _ = write!(out, ",\"attempts\":{},\"local_reason\":", r.attempts);
    optional(out, r.local_reason.map(|l| l.as_str()));
    out.extend_from_slice(b"}\n");
}

/// Seconds with microseconds, fixed-point: `0.001234`.
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// A JSON string, escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// The "combined" line, as nginx writes it: `-` for what is missing, and
/// `"`, `\`, control and non-ASCII bytes inside quotes written `\xHH`.
pub fn combined(r: &Record, out: &mut Vec<u8>) {
    match r.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - - [");
    clf_time(out, r.time);
    out.extend_from_slice(b"] \"");
    escaped(out, r.method.as_str());
    out.push(b' ');
    escaped(out, &r.path);
    let _ = write!(
        out,
        " {}\" {} {} \"",
        protocol(r.version),
        r.status,
        r.bytes_out
    );
    escaped(out, r.referer.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\" \"");
    escaped(out, r.user_agent.as_deref().unwrap_or("-"));
    out.extend_from_slice(b"\"\n");
}

fn escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000`, in UTC, from the RFC 3339 form
/// (`2000-10-10T13:55:36Z`), whose fields stand at fixed places.
fn clf_time(out: &mut Vec<u8>, time: SystemTime) {
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    let b = rfc.as_bytes();
    let month = rfc
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)));
    match (month, rfc.get(0..4), rfc.get(8..10), rfc.get(11..19)) {
        (Some(month), Some(year), Some(day), Some(clock)) if b.len() == 20 => {
            let _ = write!(out, "{day}/{month}/{year}:{clock} +0000");
        }
        // Only for times humantime cannot write in four-digit years.
        _ => out.extend_from_slice(b"01/Jan/1970:00:00:00 +0000"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::LocalReason;
    use super::*;

    /// 2000-10-10T13:55:36.123Z.
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(971_186_136_123)
    }

    fn record() -> Record {
        Record {
            time: at(),
            request_id: "abc-123".into(),
            client: Some("192.0.2.7".parse().unwrap()),
            method: http::Method::GET,
            host: "example.com".into(),
            path: "/a/b".into(),
            version: http::Version::HTTP_11,
            status: 200,
            bytes_in: 5,
            bytes_out: 1234,
            duration: Duration::from_micros(1_500),
            upstream_time: Some(Duration::from_micros(900)),
            route: Some("api".into()),
            upstream: Some("app".into()),
            backend: Some("127.0.0.1:3001".into()),
            attempts: 1,
            local_reason: None,
            referer: None,
            user_agent: Some("curl/8.0".into()),
        }
    }

    fn line(format: Format, r: &Record) -> String {
        let mut out = Vec::new();
        format.write(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_is_one_object_with_every_field() {
        let text = line(Format::Json, &record());
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        assert_eq!(
            text,
            "{\"time\":\"2000-10-10T13:55:36.123Z\",\"request_id\":\"abc-123\",\
             \"client\":\"192.0.2.7\",\"method\":\"GET\",\"host\":\"example.com\",\
             \"path\":\"/a/b\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes_in\":5,\
             \"bytes_out\":1234,\"duration\":0.001500,\"upstream_time\":0.000900,\
             \"route\":\"api\",\"upstream\":\"app\",\"backend\":\"127.0.0.1:3001\",\
             \"attempts\":1,\"local_reason\":null}\n"
        );
    }

    #[test]
    fn json_of_a_local_answer_has_nulls_and_its_reason() {
        let mut r = record();
        r.client = None;
        r.status = 404;
        r.upstream_time = None;
        r.route = None;
        r.upstream = None;
        r.backend = None;
        r.attempts = 0;
        r.local_reason = Some(LocalReason::NoRoute);
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &r)).unwrap();
        assert_eq!(v["client"], serde_json::Value::Null);
        assert_eq!(v["upstream_time"], serde_json::Value::Null);
        assert_eq!(v["backend"], serde_json::Value::Null);
        assert_eq!(v["local_reason"], "no_route");
        assert_eq!(v["status"], 404);
    }

    #[test]
    fn json_escapes_what_a_client_sends() {
        let mut r = record();
        r.host = "evil\"\n\u{1}host".into();
        r.path = "/\\\u{7f}é".into();
        r.request_id = "\"}{".into();
        let text = line(Format::Json, &r);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["host"], "evil\"\n\u{1}host");
        assert_eq!(v["path"], "/\\\u{7f}é");
        assert_eq!(v["request_id"], "\"}{");
    }

    #[test]
    fn long_durations_keep_their_seconds() {
        let mut r = record();
        r.duration = Duration::from_secs(3_700) + Duration::from_nanos(1_999);
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &r)).unwrap();
        assert_eq!(v["duration"].as_f64(), Some(3700.000001));
    }

    #[test]
    fn combined_is_the_nginx_line() {
        assert_eq!(
            line(Format::Combined, &record()),
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a/b HTTP/1.1\" 200 1234 \
             \"-\" \"curl/8.0\"\n"
        );
    }

    #[test]
    fn combined_escapes_quotes_controls_and_non_ascii() {
        let mut r = record();
        r.client = None;
        r.path = "/\"x\"\n\\é".into();
        r.referer = Some("http://a/\"b".into());
        r.user_agent = None;
        r.version = http::Version::HTTP_2;
        assert_eq!(
            line(Format::Combined, &r),
            "- - - [10/Oct/2000:13:55:36 +0000] \"GET /\\x22x\\x22\\x0A\\x5C\\xC3\\xA9 \
             HTTP/2.0\" 200 1234 \"http://a/\\x22b\" \"-\"\n"
        );
    }

    #[test]
    fn clf_time_reads_every_month() {
        // The 15th of each month of 2021, at noon UTC.
        let days_before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let start_2021 = 1_609_459_200u64;
        for (i, before) in days_before.iter().enumerate() {
            let secs = start_2021 + (before + 14) * 86_400 + 12 * 3_600;
            let mut out = Vec::new();
            clf_time(&mut out, SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            let want = format!("15/{}/2021:12:00:00 +0000", MONTHS[i]);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
