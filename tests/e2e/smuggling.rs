//! Request smuggling over raw sockets: exact bytes go to the proxy, and a
//! strict recording backend shows what was forwarded. Every request
//! Switchyard forwards carries `X-Forwarded-For`, so a recorded request
//! without it got past the proxy unparsed: smuggled. Each case is checked
//! for the status the client gets, whether the connection is closed, and
//! what (if anything) the backend received.

use crate::support::recording::Recorded;
use crate::support::wire::{exchange, Exchange};
use crate::support::{RecordingBackend, TestProxy};

/// What a case must produce.
enum Expect {
    /// This local answer, the connection closed, nothing forwarded.
    Reject(u16),
    /// Forwarded as exactly one request with this target and body, framed
    /// once; `close`: the proxy must close the connection after answering.
    Forward {
        target: &'static str,
        body: &'static [u8],
        close: bool,
    },
}

use Expect::{Forward, Reject};

struct Case {
    name: &'static str,
    bytes: &'static [u8],
    expect: Expect,
}

const fn forward(target: &'static str, body: &'static [u8], close: bool) -> Expect {
    Forward {
        target,
        body,
        close,
    }
}

const fn case(name: &'static str, bytes: &'static [u8], expect: Expect) -> Case {
    Case {
        name,
        bytes,
        expect,
    }
}

/// Runs each case on its own connection through one proxy in front of one
/// recording backend, and fails listing every case that went wrong.
async fn run(cases: &[Case]) {
    let backend = RecordingBackend::start().await;
    let proxy = TestProxy::start_app("", &[backend.addr]).await;
    let mut failed = Vec::new();
    for case in cases {
        let before = backend.requests().len();
        let got = exchange(proxy.addr, case.name, case.bytes).await;
        // A smuggled request is recorded together with the one that carried
        // it, before the proxy has the answer to that one.
        let forwarded = backend.requests().split_off(before);
        let problems = check(&case.expect, &got, &forwarded);
        if !problems.is_empty() {
            failed.push(format!(
                "{}: {}; saw {got:?}",
                case.name,
                problems.join("; ")
            ));
        }
        let unstamped = backend.unstamped();
        assert!(
            unstamped.is_empty(),
            "{}: smuggled: {unstamped:?}",
            case.name
        );
        let errors = backend.errors();
        assert!(
            errors.is_empty(),
            "{}: backend refused: {errors:?}",
            case.name
        );
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

/// What is wrong with a case's outcome, if anything.
fn check(expect: &Expect, got: &Exchange, forwarded: &[Recorded]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    match *expect {
        Reject(code) => {
            want(got.status == Some(code), format!("expected {code}"));
            want(got.closed, "connection left open".into());
            want(forwarded.is_empty(), format!("forwarded {forwarded:?}"));
        }
        Forward {
            target,
            body,
            close,
        } => {
            want(got.status == Some(200), "expected 200".into());
            want(got.closed == close, format!("expected closed = {close}"));
            let sent: Vec<&Recorded> = forwarded.iter().filter(|r| r.target != "/probe").collect();
            let [r] = sent[..] else {
                want(
                    false,
                    format!("expected one request, backend got {forwarded:?}"),
                );
                return problems;
            };
            want(r.target == target, format!("target {:?}", r.target));
            want(
                r.body == body,
                format!("body {:?}", r.body.escape_ascii().to_string()),
            );
            let framing = r.all("content-length").len() + r.all("transfer-encoding").len();
            want(framing <= 1, format!("framed twice: {:?}", r.headers));
            want(r.stamped(), "not stamped".into());
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_framed_once() {
    run(&[
        case(
            "CL then TE, GET hidden in the CL body",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 45\r\n\
              Transfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
            forward("/", b"", true),
        ),
        case(
            "TE then CL, GET hidden in the chunked body",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 4\r\n\r\n\
              28\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n\r\n0\r\n\r\n",
            forward("/", b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n", true),
        ),
    ])
    .await;
}

/// A body that is `0\r\n\r\n` chunked, and a hidden GET by length.
macro_rules! te_case {
    ($name:expr, $te:expr, $expect:expr) => {
        case(
            $name,
            concat!(
                "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 45\r\n",
                $te,
                "\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
            )
            .as_bytes(),
            $expect,
        )
    };
}

const EMPTY_CLOSE: Expect = forward("/", b"", true);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_transfer_encodings_are_refused_or_normalised() {
    run(&[
        te_case!("xchunked", "Transfer-Encoding: xchunked", Reject(400)),
        te_case!(
            "space before colon",
            "Transfer-Encoding : chunked",
            Reject(400)
        ),
        te_case!(
            "tab inside the value",
            "Transfer-Encoding: chun\tked",
            Reject(400)
        ),
        te_case!("tab as OWS", "Transfer-Encoding:\tchunked\t", EMPTY_CLOSE),
        te_case!(
            "vertical tab",
            "Transfer-Encoding: \x0bchunked",
            Reject(400)
        ),
        te_case!("obs-fold", "Transfer-Encoding: x\r\n chunked", Reject(400)),
        te_case!(
            "obs-fold of chunked",
            "Transfer-Encoding:\r\n chunked",
            Reject(400)
        ),
        te_case!(
            "chunked twice",
            "Transfer-Encoding: chunked, chunked",
            Reject(400)
        ),
        te_case!(
            "chunked then gzip",
            "Transfer-Encoding: chunked, gzip",
            Reject(400)
        ),
        te_case!(
            "gzip then chunked",
            "Transfer-Encoding: gzip, chunked",
            Reject(501)
        ),
        te_case!(
            "two TE lines, chunked twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            Reject(400)
        ),
        te_case!(
            "two TE lines, gzip then chunked",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            Reject(501)
        ),
        te_case!(
            "two TE lines, chunked then identity",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            Reject(400)
        ),
        te_case!(
            "uppercase CHUNKED",
            "Transfer-Encoding: CHUNKED",
            EMPTY_CLOSE
        ),
    ])
    .await;
}

/// A POST whose body, by a lenient reading of the length, hides a GET.
macro_rules! cl_case {
    ($name:expr, $cl:expr) => {
        case(
            $name,
            concat!(
                "POST / HTTP/1.1\r\nHost: a.test\r\n",
                $cl,
                "\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
            )
            .as_bytes(),
            Reject(400),
        )
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_lengths_are_refused() {
    run(&[
        cl_case!("plus sign", "Content-Length: +3"),
        cl_case!("hex", "Content-Length: 0x3"),
        cl_case!("negative", "Content-Length: -1"),
        cl_case!("20 digits", "Content-Length: 18446744073709551619"),
        cl_case!("empty", "Content-Length: "),
        cl_case!(
            "two differing lines",
            "Content-Length: 3\r\nContent-Length: 42"
        ),
        cl_case!("two differing in a list", "Content-Length: 3, 42"),
        case(
            "two equal lines are forwarded as one",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            forward("/", b"abc", false),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_refused() {
    let chunked = |body: &'static str| {
        let head = "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        &*format!("{head}{body}").leak()
    };
    run(&[
        Case {
            name: "non-hex size",
            bytes: chunked("3g\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
                .as_bytes(),
            expect: Reject(400),
        },
        Case {
            name: "overflowing size",
            bytes: chunked("ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n").as_bytes(),
            expect: Reject(400),
        },
        Case {
            name: "data longer than the size",
            bytes: chunked("3\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n").as_bytes(),
            expect: Reject(400),
        },
        Case {
            name: "bare LF after the size",
            bytes: chunked("3\nabc\n0\n\n").as_bytes(),
            expect: Reject(400),
        },
        Case {
            name: "bare LF after the data",
            bytes: chunked("3\r\nabc\n0\r\n\r\n").as_bytes(),
            expect: Reject(400),
        },
        Case {
            name: "well-formed, for contrast",
            bytes: chunked("3\r\nabc\r\n0\r\n\r\n").as_bytes(),
            expect: forward("/", b"abc", false),
        },
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_and_headers_are_refused() {
    run(&[
        case(
            "method with @",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case(
            "method with NUL",
            b"GE\0T / HTTP/1.1\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case(
            "HTTP/1.2",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case(
            "HTTP/2.0 on h1",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case("HTTP/1", b"GET / HTTP/1\r\nHost: a\r\n\r\n", Reject(400)),
        case(
            "asterisk GET",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case(
            "authority-form GET, other Host",
            b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            Reject(400),
        ),
        case(
            "authority-form GET, same Host",
            b"GET example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n",
            Reject(400),
        ),
        case(
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            Reject(405),
        ),
        case("no Host", b"GET / HTTP/1.1\r\n\r\n", Reject(400)),
        case(
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Reject(400),
        ),
        case(
            "NUL in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
            Reject(400),
        ),
        case(
            "bare CR in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
            Reject(400),
        ),
        case(
            "bare CR ending a line",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
            Reject(400),
        ),
        case(
            "space in a name",
            b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
            Reject(400),
        ),
        case(
            "( in a name",
            b"GET / HTTP/1.1\r\nHost: a\r\nX(A: b\r\n\r\n",
            Reject(400),
        ),
        case(
            "OPTIONS * is forwarded as is",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            forward("*", b"", false),
        ),
        case(
            "bare LF header lines are normalised",
            b"GET /lf HTTP/1.1\nHost: a\n\n",
            forward("/lf", b"", false),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_without_a_length_has_no_body() {
    run(&[case(
        "HTTP/1.0 POST, bytes after the header",
        b"POST / HTTP/1.0\r\nHost: a\r\n\r\nGET /smuggled HTTP/1.0\r\n\r\n",
        EMPTY_CLOSE,
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_reaches_the_backend_in_origin_form() {
    let backend = RecordingBackend::start().await;
    let proxy = TestProxy::start_app("", &[backend.addr]).await;
    let cases: [(&str, &[u8], Option<&str>); 4] = [
        (
            "same Host",
            b"GET http://a.test/p?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            Some("a.test"),
        ),
        (
            "HTTP/1.0 without Host",
            b"GET http://a.test/p?q=1 HTTP/1.0\r\n\r\n",
            Some("a.test"),
        ),
        // Pingora refuses a Host that differs from the target's authority
        // (RFC 9112 section 3.2.2 lets an origin prefer the authority; a
        // proxy refusing it can forward no ambiguity).
        (
            "different Host",
            b"GET http://a.test/p?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n",
            None,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET http://a.test/p?q=1 HTTP/1.1\r\n\r\n",
            None,
        ),
    ];
    for (name, bytes, host) in cases {
        let before = backend.requests().len();
        let got = exchange(proxy.addr, name, bytes).await;
        let forwarded = backend.requests().split_off(before);
        match host {
            Some(host) => {
                assert_eq!(got.status, Some(200), "{name}: {got:?}");
                let r = forwarded.iter().find(|r| r.target != "/probe").expect(name);
                assert_eq!(r.target, "/p?q=1", "{name}: {r:?}");
                assert_eq!(r.header("host"), Some(host), "{name}: {r:?}");
            }
            None => {
                assert_eq!(got.status, Some(400), "{name}: {got:?}");
                assert!(got.closed, "{name}");
                assert!(forwarded.is_empty(), "{name}: {forwarded:?}");
            }
        }
        assert!(backend.unstamped().is_empty(), "{name}: smuggled");
    }
}
