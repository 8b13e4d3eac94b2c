//! Hand-picked shapes, then property tests: well-formed bodies of every
//! kind decode to their data however the bytes are split (and each chunk
//! line reads the same to httparse, Pingora's parser); one malformed
//! spot anywhere is refused.

use proptest::prelude::*;

use super::*;

fn refused(body: &[u8]) -> bool {
    decode(body).is_err()
}

#[test]
fn well_formed_bodies_decode() {
    let ok: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"000003\r\nabc\r\n000\r\n\r\n", b"abc"),
        (b"3;a\r\nabc\r\n0;b=c\r\n\r\n", b"abc"),
        (b"3 ; a = b ;c=\"x;\\\"y\"\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"3\t;a\r\nabc\r\n0\r\nX-T: v\r\nY:\r\n\r\n", b"abc"),
        (b"ffffffffffffffff\r\n", b""),
    ];
    for (body, data) in ok {
        let mut out = Vec::new();
        let step = Chunked::new().feed(body, |d| out.extend_from_slice(d));
        let name = body.escape_ascii().to_string();
        assert!(step.is_ok(), "{name}: {step:?}");
        assert_eq!(out, *data, "{name}");
    }
}

#[test]
fn malformed_shapes_are_refused() {
    let bad: &[&[u8]] = &[
        b"5;ext=1\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\rhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhell\r\n0\r\n\r\n",
        b"0\r\n\n",
        b"0\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"g\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b"0x5\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"5;\r\n",
        b"5;a \r\n",
        b"5;a=\r\n",
        b"5;@\r\n",
        b"5;a=\"b\r\n",
        b"5;a=\"b\nc\"\r\n",
        b"5;a=b\0\r\n",
        b"00000000000000005\r\nhello\r\n",
        b"0\r\nfoo\r\n\r\n",
        b"0\r\n folded: x\r\n\r\n",
        b"0\r\nX Y: z\r\n\r\n",
        b"0\r\nX: a\nb\r\n\r\n",
        b"0\r\nX: a\0\r\n\r\n",
        b"0\r\nX: a\r\n\n",
    ];
    for body in bad {
        assert!(refused(body), "{}", body.escape_ascii());
    }
    let long = format!("1;{}\r\n", "a".repeat(MAX_LINE));
    assert!(refused(long.as_bytes()));
    let trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILERS));
    assert!(refused(trailer.as_bytes()));
}

#[test]
fn the_end_is_found_exactly() {
    let body = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    assert_eq!(Chunked::new().feed(body, |_| {}), Ok(Step::End(13)));
    let mut split = Chunked::new();
    assert_eq!(split.feed(&body[..12], |_| {}), Ok(Step::More));
    assert_eq!(split.feed(&body[12..], |_| {}), Ok(Step::End(1)));
}

/// One chunk as a strategy builds it: its data and how its line is written.
#[derive(Debug, Clone)]
struct Chunk {
    data: Vec<u8>,
    upper: bool,
    zeros: usize,
    ext: String,
}

fn ext() -> impl Strategy<Value = String> {
    let blank = "[ \t]{0,2}";
    let one = (
        blank,
        blank,
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}",
        prop::option::of((blank, blank, blank, ext_value())),
    )
        .prop_map(|(b1, b2, name, value)| match value {
            Some((b3, b4, _, v)) => format!("{b1};{b2}{name}{b3}={b4}{v}"),
            None => format!("{b1};{b2}{name}"),
        });
    prop::collection::vec(one, 0..3).prop_map(|v| v.concat())
}

fn ext_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,8}",
        "[ !#-\\[\\]-~]{0,8}".prop_map(|s| format!("\"{s}\"")),
        "[a-z]{0,3}".prop_map(|s| format!("\"{s}\\\"{s}\"")),
    ]
}

fn chunk(data: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Chunk> {
    (data, any::<bool>(), 0usize..6, ext()).prop_map(|(data, upper, zeros, ext)| Chunk {
        data,
        upper,
        zeros,
        ext,
    })
}

/// A well-formed body, and where each of its framing CRLFs is.
fn encode(chunks: &[Chunk], last_ext: &str, trailers: &[String]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut crlfs = Vec::new();
    let mut crlf = |out: &mut Vec<u8>| {
        crlfs.push(out.len());
        out.extend_from_slice(b"\r\n");
    };
    for c in chunks {
        let size = if c.upper {
            format!("{:X}", c.data.len())
        } else {
            format!("{:x}", c.data.len())
        };
        let zeros = c.zeros.min(16 - size.len());
        out.extend(format!("{}{size}{}", "0".repeat(zeros), c.ext).bytes());
        crlf(&mut out);
        out.extend_from_slice(&c.data);
        crlf(&mut out);
    }
    out.extend(format!("0{last_ext}").bytes());
    crlf(&mut out);
    for t in trailers {
        out.extend(t.bytes());
        crlf(&mut out);
    }
    crlf(&mut out);
    (out, crlfs)
}

fn trailer() -> impl Strategy<Value = String> {
    ("[A-Za-z0-9-]{1,10}", "[ \t]?", "[ -~]{0,12}").prop_map(|(n, b, v)| format!("{n}:{b}{v}"))
}

/// What may be written into a body to break it at `at`; each makes the
/// framing invalid wherever it lands (data is alphanumeric here).
fn corruption() -> impl Strategy<Value = (usize, &'static [u8])> {
    let junk: &'static [&'static [u8]] = &[
        b"\n", b"\r", b"\0", b" \r\n", b"\"", b"\x7f", b"@", b"\x0b", b"\r\r",
    ];
    (any::<usize>(), prop::sample::select(junk))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn well_formed_bodies_decode_to_their_data_however_split(
        chunks in prop::collection::vec(chunk(prop::collection::vec(any::<u8>(), 1..40)), 0..6),
        last_ext in ext(),
        trailers in prop::collection::vec(trailer(), 0..3),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        after in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let (body, _) = encode(&chunks, &last_ext, &trailers);
        let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        prop_assert_eq!(decode(&body), Ok(data.clone()));
        // Split anywhere, with the next message's bytes behind it.
        let mut wire = body.clone();
        wire.extend_from_slice(&after);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let (mut reader, mut out, mut from, mut end) = (Chunked::new(), Vec::new(), 0, None);
        for to in cuts {
            if end.is_some() {
                break;
            }
            match reader.feed(&wire[from..to], |d| out.extend_from_slice(d)) {
                Ok(Step::End(n)) => end = Some(from + n),
                Ok(Step::More) => {}
                Err(e) => prop_assert!(false, "{e}"),
            }
            from = to;
        }
        prop_assert_eq!(end, Some(body.len()));
        prop_assert_eq!(out, data);
    }

    #[test]
    fn chunk_lines_read_the_same_to_httparse(c in chunk(prop::collection::vec(any::<u8>(), 1..300))) {
        let (body, crlfs) = encode(std::slice::from_ref(&c), "", &[]);
        let line_end = crlfs[0] + 2;
        let parsed = httparse::parse_chunk_size(&body);
        prop_assert_eq!(
            parsed.ok(),
            Some(httparse::Status::Complete((line_end, c.data.len() as u64)))
        );
    }

    #[test]
    fn a_bare_lf_or_cr_for_any_crlf_is_refused(
        chunks in prop::collection::vec(chunk("[a-z0-9]{1,20}".prop_map(String::into_bytes)), 0..5),
        last_ext in ext(),
        trailers in prop::collection::vec(trailer(), 0..3),
        which in any::<usize>(),
        lf in any::<bool>(),
    ) {
        let (mut body, crlfs) = encode(&chunks, &last_ext, &trailers);
        let at = crlfs[which % crlfs.len()];
        body.remove(if lf { at } else { at + 1 });
        prop_assert!(refused(&body), "{}", body.escape_ascii());
    }

    #[test]
    fn junk_in_the_framing_is_refused(
        chunks in prop::collection::vec(chunk("[a-z0-9]{1,20}".prop_map(String::into_bytes)), 1..5),
        trailers in prop::collection::vec(trailer(), 0..3),
        (at, junk) in corruption(),
    ) {
        let (body, crlfs) = encode(&chunks, "", &trailers);
        // Just before a framing CRLF: in a size, an extension, after data
        // or in a trailer (where printable bytes are a value's own).
        let which = at % crlfs.len();
        let in_trailer = (2 * chunks.len() + 1..crlfs.len() - 1).contains(&which);
        let junk = if in_trailer && junk.iter().all(u8::is_ascii_graphic) {
            &b"\0"[..]
        } else {
            junk
        };
        let at = crlfs[which];
        let mut broken = body[..at].to_vec();
        broken.extend_from_slice(junk);
        broken.extend_from_slice(&body[at..]);
        prop_assert!(refused(&broken), "{}", broken.escape_ascii());
    }

    #[test]
    fn a_size_that_is_not_the_datas_is_refused(
        data in "[a-z0-9]{2,30}",
        off in prop::sample::select(vec![-1i64, 1, 2]),
    ) {
        let size = (data.len() as i64 + off) as usize;
        let body = format!("{size:x}\r\n{data}\r\n0\r\n\r\n");
        prop_assert!(refused(body.as_bytes()), "{body:?}");
    }

    #[test]
    fn sizes_that_are_not_hex_digits_are_refused(
        size in prop_oneof![
            "[g-zG-Z+-]{1,3}[0-9a-f]{0,3}",
            "(0x|0X|-|\\+| |\t)[0-9a-f]{1,4}",
            "[0-9a-f]{17,20}",
        ],
    ) {
        let body = format!("{size}\r\nabc\r\n0\r\n\r\n");
        prop_assert!(refused(body.as_bytes()), "{body:?}");
    }
}
